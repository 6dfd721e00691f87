# @summary The stream side of an adapter: where it publishes, and the JetStream stream that
#   `choria-broker-adapters streams setup` provisions.
#
# Omitted keys are not written, so the runtime's defaults apply.
type Choria::Adapter::Stream = Struct[{
    Optional['type']                 => Choria::Adapter::Type,
    Optional['topic']                => Choria::Subject,
    Optional['workers']              => Integer[1, 100],
    Optional['servers']              => Array[Choria::Server],
    Optional['ack_timeout']          => Choria::Duration,
    Optional['retry_budget']         => Choria::Duration,
    Optional['max_pending']          => Integer[1, 65536],
    Optional['publish']              => Enum['auto', 'batched', 'acked'],
    Optional['name']                 => Choria::StreamName,
    Optional['subjects']             => Array[Choria::Subject, 1],
    Optional['max_age']              => Choria::Duration,
    Optional['storage']              => Enum['file', 'memory'],
    Optional['replicas']             => Integer[1, 5],
    Optional['max_msgs_per_subject'] => Variant[Integer[-1, -1], Integer[1]],
    Optional['duplicate_window']     => Choria::Duration,
}]
