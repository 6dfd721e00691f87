# @summary Configures and runs choria-broker-adapters, the Python Choria protocol adapters.
#
# Installs the runtime into its own virtualenv (`install_dir`), writes `broker.conf` (the Choria
# broker's flat `key = value` format) and manages a hardened systemd service running
# `choria-broker-adapters run --config <config_file>`, restarted when the file or the installed
# release changes. Every default lives in the module's hiera data (`data/common.yaml`), so a site sets
# only what differs, typically `choria::broker::adapters`, and declares `include choria::broker`.
#
# `choria-broker-adapters render --data FILE.yaml` writes the same file byte for byte from the
# same hiera keys, for hosts without Puppet.
#
# @example One adapter storing node registrations in JetStream
#   class { 'choria::broker':
#     adapters => {
#       'node_data' => {
#         'type'   => 'choria_streams',
#         'stream' => {
#           'topic'   => 'choria.node_metadata.%s',
#           'workers' => 10,
#           'servers' => ['js1.example.net:4222'],
#         },
#         'ingest' => {
#           'topic'    => 'choria.discovery',
#           'protocol' => 'request',
#           'workers'  => 10,
#         },
#       },
#     },
#   }
#
# @param ensure
#   `present` writes the file and runs the service; `absent` stops the service and removes
#   the file and the unit.
# @param config_file
#   Path of the configuration file the service reads.
# @param identity
#   `identity`: the certificate name for the `puppet` security provider and the `identity`
#   label of every metric. Defaults to the node's certname; `undef` leaves the line out so the
#   runtime derives it from the host name.
# @param log_file
#   `logfile`: `stdout` (the journal, under systemd), `stderr`, `discard`, or a file
#   (JSON lines).
# @param log_level
#   `loglevel`.
# @param stats_address
#   `plugin.choria.stats_address`: listen address of the metrics endpoint.
# @param stats_port
#   `plugin.choria.stats_port`; 0 disables the endpoint and leaves both stats lines out. The
#   default, 8223, keeps clear of a Go Choria broker's usual 8222 on the same host.
# @param middleware_hosts
#   `plugin.choria.middleware_hosts`: the Choria network's NATS servers, `host:port`; empty
#   leaves the line out (SRV records, then `puppet:4222`).
# @param security_provider
#   `plugin.security.provider`: `puppet` (certificates under `ssldir`), `file`
#   (`file_certificate`, `file_key` and `file_ca`, all three required), both protocol v1, or
#   `choria` (protocol v2: `issuers` and `choria_certificate`, `choria_key`, `choria_ca`, all
#   required).
# @param ssldir
#   `plugin.choria.ssldir` for the `puppet` provider; `undef` leaves the line out.
# @param file_certificate
#   `plugin.security.file.certificate` for the `file` provider.
# @param file_key
#   `plugin.security.file.key` for the `file` provider.
# @param file_ca
#   `plugin.security.file.ca` for the `file` provider.
# @param issuers
#   For the `choria` provider: the trusted issuers by name, each its ed25519 public key in hex;
#   written as `plugin.security.issuer.names` and `plugin.security.issuer.<name>.public`.
# @param choria_certificate
#   `plugin.security.choria.certificate`: the TLS certificate for the `choria` provider.
# @param choria_key
#   `plugin.security.choria.key`: its private key.
# @param choria_ca
#   `plugin.security.choria.ca`: the CA that signs the NATS servers' certificates.
# @param adapters
#   The protocol adapters by name; see `Choria::Adapter`. Written sorted by name, each
#   adapter's keys in a fixed order, so hash order in the data never changes the file.
# @param manage_package
#   Install the runtime into a virtualenv at `install_dir` (never into the system interpreter,
#   which Debian 12 and EL 9 mark as externally managed); `false` leaves installing to the site.
# @param install_dir
#   The virtualenv's directory; `ensure => absent` removes it whole, so give it to this service
#   alone.
# @param package_ensure
#   `present`, `latest` or a version such as `0.1.0`. A change restarts the service.
# @param package_source
#   Where pip finds the package: `undef` for the default package index, the URL of an internal
#   index, or the absolute path of a wheel or sdist (its file name gives the version, which
#   must agree with a version in `package_ensure`). Dependencies come from the index (or from
#   the mirror given here).
# @param python
#   The interpreter the virtualenv is created with (3.11 or later).
# @param python_packages
#   Operating system packages that interpreter needs to create a virtualenv.
# @param manage_service
#   Manage the systemd unit and service; `false` only installs and writes the file.
# @param service_name
#   Name of the systemd service (and of its unit file under /etc/systemd/system).
# @param service_user
#   User the service runs as. Root by default because the `puppet` provider reads the node's
#   private key, which only root may read; any other user must be able to read the key files.
# @param service_group
#   Group the service runs as.
# @param pid_file
#   When set, the runtime writes its process id there (`--pid`); the unit may write that file's
#   directory.
# @param limit_nofile
#   The unit's `LimitNOFILE`; `undef` sizes it from the adapters (1024 plus one connection per
#   ingest and per stream worker, 20 per adapter at the default 10 + 10).
# @param executable
#   The `choria-broker-adapters` program the service runs; `undef` means the virtualenv's
#   console script, `<install_dir>/bin/choria-broker-adapters`.
# @param config_owner
#   Owner of the configuration file.
# @param config_group
#   Group of the configuration file (mode 0640: it may name credentials).
class choria::broker (
  Enum['present', 'absent'] $ensure,
  Choria::Path $config_file,
  Optional[Choria::SingleLine] $identity,
  Choria::LogFile $log_file,
  Choria::LogLevel $log_level,
  Choria::Subject $stats_address,
  Integer[0, 65535] $stats_port,
  Array[Choria::Server] $middleware_hosts,
  Enum['puppet', 'file', 'choria'] $security_provider,
  Optional[Choria::Path] $ssldir,
  Optional[Choria::Path] $file_certificate,
  Optional[Choria::Path] $file_key,
  Optional[Choria::Path] $file_ca,
  Hash[Choria::Name, Choria::IssuerKey] $issuers,
  Optional[Choria::Path] $choria_certificate,
  Optional[Choria::Path] $choria_key,
  Optional[Choria::Path] $choria_ca,
  Choria::Adapters $adapters,
  Boolean $manage_package,
  Choria::Path $install_dir,
  Choria::PackageEnsure $package_ensure,
  Optional[Variant[Choria::Path, Choria::IndexUrl]] $package_source,
  Choria::Path $python,
  Array[Choria::OsPackage] $python_packages,
  Boolean $manage_service,
  Choria::Name $service_name,
  Choria::Name $service_user,
  Choria::Name $service_group,
  Optional[Choria::Path] $pid_file,
  Optional[Integer[1024]] $limit_nofile,
  Optional[Choria::Path] $executable,
  Choria::Name $config_owner,
  Choria::Name $config_group,
) {
  # Checks across keys that a type cannot express; the messages name the hiera key, exactly as
  # choria-broker-adapters render words them.
  if $security_provider in ['file', 'choria'] {
    ['certificate', 'key', 'ca'].each |String $role| {
      $key = "${security_provider}_${role}"
      if getvar("choria::broker::${key}") == undef {
        fail("choria::broker::${key}: expects a path when security_provider is '${security_provider}'")
      }
    }
  }
  if $security_provider == 'choria' and $issuers.empty {
    fail("choria::broker::issuers: expects at least one issuer when security_provider is 'choria'")
  }
  if $security_provider != 'choria' and !$issuers.empty {
    fail("choria::broker::issuers: only the 'choria' security_provider uses issuers, not '${security_provider}'")
  }
  $adapters.each |String $name, Hash $adapter| {
    $stream_type = $adapter.dig('stream', 'type')
    if $adapter['type'] == undef and $stream_type == undef {
      fail("choria::broker::adapters.${name}.type: expects a value: 'jetstream' or 'choria_streams'")
    }
    if $adapter['type'] != undef and $stream_type != undef and $adapter['type'] != $stream_type {
      fail("choria::broker::adapters.${name}.type: '${adapter['type']}' disagrees with stream.type '${stream_type}'; give the type once")
    }
  }

  # A path source names one file whose name carries the version; check it here so a mismatch
  # fails the catalog instead of reinstalling on every run.
  if $package_source =~ Choria::Path {
    $source_file = $package_source.split('/')[-1]
    $source_version = $source_file ? {
      /\Achoria_broker_adapters-([^-]+)(?:-[0-9][^-]*)?-[^-]+-[^-]+-[^-]+\.whl\z/ => $1,
      /\Achoria[-_]broker[-_]adapters-([^-]+)\.(?:tar\.gz|zip)\z/        => $1,
      default                                                             => undef,
    }
    if $source_version == undef {
      fail("choria::broker::package_source: '${package_source}' is not a choria-broker-adapters wheel or sdist file name")
    }
    if $package_ensure =~ Choria::PackageVersion and $package_ensure != $source_version {
      fail("choria::broker::package_ensure: '${package_ensure}' disagrees with ${source_file}, which holds ${source_version}")
    }
  }

  $service_executable = $executable.lest || { "${install_dir}/bin/choria-broker-adapters" }

  if $manage_package {
    contain choria::broker::install
  }
  contain choria::broker::config
  if $manage_service {
    contain choria::broker::service
  }

  # present: install -> config -> service, and a new file or release restarts the service;
  # absent: stop the service first, then remove what it used.
  if $ensure == 'present' {
    if $manage_package {
      Class['choria::broker::install'] -> Class['choria::broker::config']
      if $manage_service {
        Class['choria::broker::install'] ~> Class['choria::broker::service']
      }
    }
    if $manage_service {
      Class['choria::broker::config'] ~> Class['choria::broker::service']
    }
  } else {
    if $manage_service {
      Class['choria::broker::service'] -> Class['choria::broker::config']
    }
    if $manage_package {
      Class['choria::broker::config'] -> Class['choria::broker::install']
    }
  }
}
