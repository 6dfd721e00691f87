# @summary Configures and runs choria-broker-adapters, the Python Choria protocol adapters.
#
# Writes `broker.conf` (the Choria broker's flat `key = value` format) and manages a systemd
# service running `choria-broker-adapters run --config <config_file>`, restarted when the file
# changes. Every default lives in the module's hiera data (`data/common.yaml`), so a site sets
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
#   `plugin.security.provider`: `puppet` (certificates under `ssldir`) or `file`
#   (`file_certificate`, `file_key` and `file_ca`, all three required).
# @param ssldir
#   `plugin.choria.ssldir` for the `puppet` provider; `undef` leaves the line out.
# @param file_certificate
#   `plugin.security.file.certificate` for the `file` provider.
# @param file_key
#   `plugin.security.file.key` for the `file` provider.
# @param file_ca
#   `plugin.security.file.ca` for the `file` provider.
# @param adapters
#   The protocol adapters by name; see `Choria::Adapter`. Written sorted by name, each
#   adapter's keys in a fixed order, so hash order in the data never changes the file.
# @param manage_service
#   Manage the systemd unit and service; `false` only writes the file.
# @param service_name
#   Name of the systemd service (and of its unit file under /etc/systemd/system).
# @param executable
#   The `choria-broker-adapters` program the service runs.
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
  Enum['puppet', 'file'] $security_provider,
  Optional[Choria::Path] $ssldir,
  Optional[Choria::Path] $file_certificate,
  Optional[Choria::Path] $file_key,
  Optional[Choria::Path] $file_ca,
  Choria::Adapters $adapters,
  Boolean $manage_service,
  Choria::Name $service_name,
  Choria::Path $executable,
  Choria::Name $config_owner,
  Choria::Name $config_group,
) {
  # Checks across keys that a type cannot express; the messages name the hiera key, exactly as
  # choria-broker-adapters render words them.
  if $security_provider == 'file' {
    ['file_certificate', 'file_key', 'file_ca'].each |String $key| {
      if getvar("choria::broker::${key}") == undef {
        fail("choria::broker::${key}: expects a path when security_provider is 'file'")
      }
    }
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

  contain choria::broker::config

  if $manage_service {
    contain choria::broker::service
    if $ensure == 'present' {
      Class['choria::broker::config'] ~> Class['choria::broker::service']
    } else {
      Class['choria::broker::service'] -> Class['choria::broker::config']
    }
  }
}
