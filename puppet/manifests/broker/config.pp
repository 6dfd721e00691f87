# @summary Writes broker.conf for choria::broker.
#
# @api private
class choria::broker::config {
  # stdlib's assert_private() without depending on stdlib.
  if $caller_module_name != $module_name {
    fail("${name} is private to the ${module_name} module: use class choria::broker")
  }

  # Each adapter as [name, [[key, value], ...]], names sorted and keys in a fixed order (`type`
  # first, then the rest sorted), so the order of keys in merged hiera data never changes the
  # file and restarts the service for nothing. `type` given inside `stream` (the Choria
  # documentation's form) becomes the adapter-level `type` line, the only one the broker reads.
  $adapter_blocks = $choria::broker::adapters.keys.sort.map |String $name| {
    $adapter = $choria::broker::adapters[$name]
    $stream = $adapter['stream'].lest || { {} }
    $type = $adapter['type'].lest || { $stream['type'] }
    $settings = {
      'queue_len'      => $adapter['queue_len'],
      'shutdown_grace' => $adapter['shutdown_grace'],
    } + Hash($adapter['ingest'].map |$key, $value| { ["ingest.${key}", $value] }) + Hash(
      $stream.filter |$key, $value| { $key != 'type' }.map |$key, $value| { ["stream.${key}", $value] }
    )
    # An empty array (servers => []) is left out rather than written as `key = `.
    $written = $settings.filter |$key, $value| { $value != undef and $value != [] }
    $lines = $written.keys.sort.map |String $key| {
      $value = $written[$key]
      [$key, $value ? { Array => $value.join(', '), default => String($value) }]
    }
    [$name, [['type', $type]] + $lines]
  }

  $content = epp('choria/broker.cfg.epp', {
      'identity'          => $choria::broker::identity,
      'log_file'          => $choria::broker::log_file,
      'log_level'         => $choria::broker::log_level,
      'stats_address'     => $choria::broker::stats_address,
      'stats_port'        => $choria::broker::stats_port,
      'middleware_hosts'  => $choria::broker::middleware_hosts.join(', '),
      'security_provider' => $choria::broker::security_provider,
      'ssldir'            => $choria::broker::ssldir,
      'file_certificate'  => $choria::broker::file_certificate,
      'file_key'          => $choria::broker::file_key,
      'file_ca'           => $choria::broker::file_ca,
      'issuers'           => $choria::broker::issuers.keys.sort.map |String $issuer| {
        [$issuer, $choria::broker::issuers[$issuer]]
      },
      'choria_certificate' => $choria::broker::choria_certificate,
      'choria_key'        => $choria::broker::choria_key,
      'choria_ca'         => $choria::broker::choria_ca,
      'adapter_names'     => $choria::broker::adapters.keys.sort.join(', '),
      'adapter_blocks'    => $adapter_blocks,
  })

  $file_ensure = $choria::broker::ensure ? { 'present' => 'file', default => 'absent' }

  file { $choria::broker::config_file:
    ensure  => $file_ensure,
    owner   => $choria::broker::config_owner,
    group   => $choria::broker::config_group,
    mode    => '0640',
    content => $content,
  }
}
