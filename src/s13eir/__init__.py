"""s13eir: an Equipment Identity Register for S13/S13' (TS 29.272) and N5g-eir."""

__version__ = "0.1.0"
