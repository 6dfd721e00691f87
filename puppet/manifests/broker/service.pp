# @summary Manages the hardened systemd service that runs choria-broker-adapters.
#
# @api private
class choria::broker::service {
  # stdlib's assert_private() without depending on stdlib.
  if $caller_module_name != $module_name {
    fail("${name} is private to the ${module_name} module: use class choria::broker")
  }

  $unit_file = "/etc/systemd/system/${choria::broker::service_name}.service"

  if $choria::broker::ensure == 'present' {
    # Each ingest and each stream worker holds one NATS connection.
    $connections = $choria::broker::adapters.map |String $name, Hash $adapter| {
      ($adapter.dig('ingest', 'workers').lest || { 10 }) + ($adapter.dig('stream', 'workers').lest || { 10 })
    }.reduce(0) |Integer $sum, Integer $count| { $sum + $count }
    $limit_nofile = $choria::broker::limit_nofile.lest || { 1024 + $connections }

    # ProtectSystem=strict makes the file system read-only for the service but for these: the
    # log file itself (created here, so the bind mount has something to bind; rotate it with
    # copytruncate) and the pid file's directory (the runtime creates and removes the file).
    $log_file = $choria::broker::log_file ? {
      Choria::Path => $choria::broker::log_file,
      default      => undef,
    }
    $pid_dir = $choria::broker::pid_file ? {
      undef   => undef,
      /\A\/[^\/]*\z/ => '/',
      default => $choria::broker::pid_file.regsubst(/\/[^\/]*\z/, ''),
    }
    $writable_paths = [$log_file, $pid_dir].filter |$path| { $path != undef }

    if $log_file {
      file { $log_file:
        ensure  => file,
        owner   => $choria::broker::service_user,
        group   => $choria::broker::service_group,
        mode    => '0640',
        replace => false,
        before  => Service[$choria::broker::service_name],
      }
    }

    # Puppet's systemd provider reloads systemd itself when the unit file changed.
    file { $unit_file:
      ensure  => file,
      owner   => 'root',
      group   => 'root',
      mode    => '0644',
      content => epp('choria/choria-broker-adapters.service.epp', {
          'executable'     => $choria::broker::service_executable,
          'config_file'    => $choria::broker::config_file,
          'user'           => $choria::broker::service_user,
          'group'          => $choria::broker::service_group,
          'pid_file'       => $choria::broker::pid_file,
          'writable_paths' => $writable_paths,
          'limit_nofile'   => $limit_nofile,
      }),
    }
    ~> service { $choria::broker::service_name:
      ensure => running,
      enable => true,
    }
  } else {
    service { $choria::broker::service_name:
      ensure => stopped,
      enable => false,
    }
    -> file { $unit_file:
      ensure => absent,
    }
  }
}
