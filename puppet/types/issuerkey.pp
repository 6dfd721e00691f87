# @summary An issuer's ed25519 public key as 64 hexadecimal digits (32 bytes), the form
#   `plugin.security.issuer.<name>.public` takes.
type Choria::IssuerKey = Pattern[/\A[0-9A-Fa-f]{64}\z/]
