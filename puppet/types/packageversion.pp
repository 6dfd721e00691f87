# @summary A release of the choria-broker-adapters Python package in PEP 440's normalised form
#   (`0.1.0`, `1.2.0rc1`, `1.2.0.post1`), compared as text with what the virtualenv holds.
type Choria::PackageVersion = Pattern[/\A[0-9]+(?:\.[0-9]+)*(?:(?:a|b|rc)[0-9]+)?(?:\.post[0-9]+)?(?:\.dev[0-9]+)?\z/]
