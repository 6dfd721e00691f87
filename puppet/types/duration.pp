# @summary A duration: whole seconds as an Integer, or a string with a unit: Go duration syntax
#   (`300ms`, `1h30m`) or a number with `w`, `d`, `M` (30 days) or `Y` (365 days).
#
# A quoted number such as "30" is rejected: write 30 (seconds) or "30s".
type Choria::Duration = Variant[
  Integer[0],
  Pattern[/\A(?:(?:[0-9]+(?:\.[0-9]+)?(?:ns|us|ms|s|m|h))+|[0-9]+(?:\.[0-9]+)?[wWdDMYy])\z/],
]
