# @summary Manages the systemd service that runs choria-broker-adapters.
#
# @api private
class choria::broker::service {
  # stdlib's assert_private() without depending on stdlib.
  if $caller_module_name != $module_name {
    fail("${name} is private to the ${module_name} module: use class choria::broker")
  }

  $unit_file = "/etc/systemd/system/${choria::broker::service_name}.service"

  if $choria::broker::ensure == 'present' {
    # Puppet's systemd provider reloads systemd itself when the unit file changed.
    file { $unit_file:
      ensure  => file,
      owner   => 'root',
      group   => 'root',
      mode    => '0644',
      content => epp('choria/choria-broker-adapters.service.epp', {
          'executable'  => $choria::broker::executable,
          'config_file' => $choria::broker::config_file,
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
