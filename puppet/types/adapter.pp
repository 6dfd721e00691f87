# @summary One protocol adapter: `plugin.choria.adapter.NAME.*`.
#
# `type` may be given here or, as every Choria documentation example does, inside `stream`;
# either way it is written as the adapter-level `type` line the broker reads. Giving neither, or
# both with different values, fails in `choria::broker`.
type Choria::Adapter = Struct[{
    Optional['type']           => Choria::Adapter::Type,
    Optional['queue_len']      => Integer[1, 10000000],
    Optional['shutdown_grace'] => Choria::Duration,
    'ingest'                   => Choria::Adapter::Ingest,
    Optional['stream']         => Choria::Adapter::Stream,
}]
