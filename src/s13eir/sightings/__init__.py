"""Sighting events: one MQTT message whenever a black, grey or unknown phone tries to
attach. ``sighting`` is the record and its JSON form (pure), ``publisher`` the
non-blocking MQTT publisher. Import the modules themselves: this face is empty, so that
``sighting`` comes without aiomqtt."""
