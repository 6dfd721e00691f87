# @summary An adapter name: it becomes part of every `plugin.choria.adapter.NAME.*` key.
type Choria::Name = Pattern[/\A[A-Za-z0-9_-]+\z/]
