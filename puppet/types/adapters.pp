# @summary The adapters of one broker, by name.
type Choria::Adapters = Hash[Choria::Name, Choria::Adapter]
