# @summary A JetStream stream name (no whitespace, `.`, `*`, `>` or path separators).
type Choria::StreamName = Pattern[/\A[A-Za-z0-9_-]+\z/]
