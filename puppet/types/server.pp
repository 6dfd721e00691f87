# @summary A NATS server as `host:port`, `nats://host:port` or `tls://host:port` (IPv6 as
#   `[addr]:port`); the port is mandatory, as the Choria broker requires.
type Choria::Server = Pattern[/\A(?:(?:nats|tls):\/\/)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])\z/]
