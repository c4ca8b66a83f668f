"""Connections to the services s13eir uses: Redis (``redis_client``: the one factory
that the node, the writer and ``s13eir sync`` share) and MQTT brokers (``mqtt_url``: the
one URL parser for the sightings publisher and the change feed)."""
