"""Interoperability tests: independent Diameter implementations against s13eir."""
