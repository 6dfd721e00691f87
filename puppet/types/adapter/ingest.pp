# @summary The ingest side of an adapter: what it subscribes to on the Choria network, and
#   whether it checks each message's signature (`verify`: `off`, `warn` or `enforce`) against
#   `verify_ca` (protocol v1; default the security provider's CA) or the issuers (protocol v2).
type Choria::Adapter::Ingest = Struct[{
    'topic'               => Choria::Subject,
    Optional['protocol']  => Enum['request', 'reply'],
    Optional['workers']   => Integer[1, 100],
    Optional['verify']    => Enum['off', 'warn', 'enforce'],
    Optional['verify_ca'] => Choria::Path,
}]
