# @summary A Python package index (the "simple" API) as an http or https URL, for sites with an
#   internal mirror.
type Choria::IndexUrl = Pattern[/\Ahttps?:\/\/[^\s%]+\z/]
