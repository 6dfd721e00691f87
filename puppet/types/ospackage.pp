# @summary An operating system package name (`python3-venv`, `python3.11`).
type Choria::OsPackage = Pattern[/\A[A-Za-z0-9][A-Za-z0-9.+_-]*\z/]
