# @summary The ingest side of an adapter: what it subscribes to on the Choria network.
type Choria::Adapter::Ingest = Struct[{
    'topic'              => Choria::Subject,
    Optional['protocol'] => Enum['request', 'reply'],
    Optional['workers']  => Integer[1, 100],
}]
