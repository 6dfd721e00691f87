# @summary The adapter types: `jetstream` is an alias of `choria_streams`.
type Choria::Adapter::Type = Enum['jetstream', 'choria_streams']
