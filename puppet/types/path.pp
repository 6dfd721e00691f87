# @summary An absolute path without whitespace or `%` (it is also written into the systemd unit,
#   where `%` starts a specifier).
type Choria::Path = Pattern[/\A\/[^\s%]*\z/]
