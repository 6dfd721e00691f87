# @summary Which release the virtualenv holds: `present` (any, installed once), `latest` (checked
#   against the package source on every run) or one exact `Choria::PackageVersion`.
type Choria::PackageEnsure = Variant[Enum['present', 'latest'], Choria::PackageVersion]
