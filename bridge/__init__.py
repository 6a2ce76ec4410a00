"""Bridge between an e家宜业 (ejyy) database and the gateways: plays the cloud of shared/spec/mqtt.md."""
