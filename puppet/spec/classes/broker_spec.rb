require 'spec_helper'

NODE_DATA = {
  'type' => 'choria_streams',
  'ingest' => { 'topic' => 'choria.discovery', 'protocol' => 'request' },
}.freeze

describe 'choria::broker' do
  let(:node) { 'broker1.example.net' }

  context 'with the module defaults' do
    it { is_expected.to compile.with_all_deps }
    it { is_expected.to contain_class('choria::broker::config') }
    it { is_expected.to contain_class('choria::broker::service') }

    it 'writes the file readable by root and its group only' do
      is_expected.to contain_file('/etc/choria/broker.conf').with(
        ensure: 'file', owner: 'root', group: 'root', mode: '0640',
      ).with_content(%r{^identity = broker1\.example\.net$})
    end

    it 'runs the service from a unit naming the config file, restarted when the file changes' do
      is_expected.to contain_file('/etc/systemd/system/choria-broker-adapters.service')
        .with_content(%r{^ExecStart=/opt/choria-broker-adapters/bin/choria-broker-adapters run --config /etc/choria/broker\.conf$})
        .that_notifies('Service[choria-broker-adapters]')
      is_expected.to contain_service('choria-broker-adapters').with(ensure: 'running', enable: true)
      is_expected.to contain_file('/etc/choria/broker.conf').that_notifies('Service[choria-broker-adapters]')
    end
  end

  context 'with manage_service => false' do
    let(:params) { { manage_service: false, adapters: { 'node_data' => NODE_DATA } } }

    it { is_expected.to compile.with_all_deps }
    it { is_expected.not_to contain_class('choria::broker::service') }
    it { is_expected.to have_service_resource_count(0) }
    it { is_expected.to contain_class('choria::broker::install').that_comes_before('Class[choria::broker::config]') }
    it { is_expected.to contain_file('/etc/choria/broker.conf').with_content(%r{^plugin\.choria\.adapter\.node_data\.type = choria_streams$}) }
  end

  context 'with ensure => absent' do
    let(:params) { { ensure: 'absent', config_file: '/etc/choria/adapters.conf', service_name: 'cba' } }

    it { is_expected.to compile.with_all_deps }
    it { is_expected.to contain_service('cba').with(ensure: 'stopped', enable: false).that_comes_before('File[/etc/choria/adapters.conf]') }
    it { is_expected.to contain_file('/etc/systemd/system/cba.service').with_ensure('absent') }
    it { is_expected.to contain_file('/etc/choria/adapters.conf').with_ensure('absent').that_comes_before('Class[choria::broker::install]') }
    it { is_expected.to contain_file('/opt/choria-broker-adapters').with(ensure: 'absent', force: true) }
    it { is_expected.to have_exec_resource_count(0) }
  end

  context 'with a newline in an ingest topic' do
    let(:params) { { adapters: { 'x' => NODE_DATA.merge('ingest' => { 'topic' => "a\nplugin.choria.adapters = evil" }) } } }

    it { is_expected.to compile.and_raise_error(%r{entry 'x' entry 'ingest' entry 'topic' expects a match for Choria::Subject}) }
  end

  context 'with the file provider missing its CA' do
    let(:params) { { security_provider: 'file', file_certificate: '/c.pem', file_key: '/k.pem' } }

    it { is_expected.to compile.and_raise_error(%r{choria::broker::file_ca: expects a path when security_provider is 'file'}) }
  end
end

describe 'choria::broker' do
  let(:node) { 'broker1.example.net' }
  let(:venv_python) { '/opt/choria-broker-adapters/bin/python -I' }

  def exec_named(title)
    catalogue.resource('Exec', title)
  end

  context 'with the defaults (present, from the package index)' do
    it 'creates the virtualenv with the system interpreter, once' do
      venv = exec_named('choria-broker-adapters virtualenv')
      expect(venv[:command]).to eq('/usr/bin/python3 -I -m venv /opt/choria-broker-adapters')
      expect(venv[:creates]).to eq('/opt/choria-broker-adapters/bin/python')
    end

    it 'installs the venv python3 package first on Debian' do
      is_expected.to contain_package('python3-venv').that_comes_before('Exec[choria-broker-adapters virtualenv]')
    end

    it 'installs the package unless the virtualenv already holds it' do
      install = exec_named('choria-broker-adapters package')
      expect(install[:command]).to start_with("#{venv_python} -m pip install --disable-pip-version-check --no-input --quiet choria-broker-adapters && ")
      expect(install[:unless]).to start_with("#{venv_python} -c ")
      expect(install[:unless]).to include('importlib.metadata.distributions(name="choria-broker-adapters")')
      expect(install[:unless]).not_to include('pip list')
    end

    it 'orders install before config and restarts the service on a new release' do
      is_expected.to contain_class('choria::broker::install').that_comes_before('Class[choria::broker::config]')
      is_expected.to contain_class('choria::broker::install').that_notifies('Class[choria::broker::service]')
      is_expected.to contain_class('choria::broker::config').that_notifies('Class[choria::broker::service]')
    end
  end

  context 'with a version from an internal index' do
    let(:params) { { package_ensure: '1.2.0rc1', package_source: 'https://pypi.example.net/simple' } }

    it 'pins the version, asks that index and checks the version' do
      install = exec_named('choria-broker-adapters package')
      expect(install[:command]).to include(' --index-url https://pypi.example.net/simple choria-broker-adapters==1.2.0rc1 && ')
      expect(install[:unless]).to end_with(' 1.2.0rc1')
    end
  end

  context 'with latest from the index' do
    let(:params) { { package_ensure: 'latest' } }

    it 'upgrades, and the guard also asks the index for a newer release' do
      install = exec_named('choria-broker-adapters package')
      expect(install[:command]).to include(' --upgrade choria-broker-adapters && ')
      expect(install[:unless]).to include(' -m pip list --outdated --format=json --disable-pip-version-check | ')
    end
  end

  context 'with a wheel file' do
    let(:params) do
      { package_source: '/srv/wheels/choria_broker_adapters-0.3.0-py3-none-any.whl', install_dir: '/srv/cba', python: '/usr/bin/python3.11' }
    end

    it 'installs that file and expects the version in its name' do
      install = exec_named('choria-broker-adapters package')
      expect(install[:command]).to include(' --quiet /srv/wheels/choria_broker_adapters-0.3.0-py3-none-any.whl && ')
      expect(install[:unless]).to end_with(' 0.3.0')
      expect(exec_named('choria-broker-adapters virtualenv')[:command]).to eq('/usr/bin/python3.11 -I -m venv /srv/cba')
      is_expected.to contain_file('/etc/systemd/system/choria-broker-adapters.service')
        .with_content(%r{^ExecStart=/srv/cba/bin/choria-broker-adapters run --config /etc/choria/broker\.conf$})
    end
  end

  context 'with a wheel file of another version than package_ensure' do
    let(:params) { { package_source: '/srv/choria_broker_adapters-0.3.0-py3-none-any.whl', package_ensure: '0.2.0' } }

    it { is_expected.to compile.and_raise_error(%r{package_ensure: '0.2.0' disagrees with choria_broker_adapters-0.3.0-py3-none-any.whl, which holds 0.3.0}) }
  end

  context 'with manage_package => false and an executable' do
    let(:params) { { manage_package: false, executable: '/usr/bin/choria-broker-adapters' } }

    it { is_expected.not_to contain_class('choria::broker::install') }
    it { is_expected.to have_exec_resource_count(0) }
    it { is_expected.to contain_file('/etc/systemd/system/choria-broker-adapters.service').with_content(%r{^ExecStart=/usr/bin/choria-broker-adapters run}) }
  end

  context 'on EL 9' do
    let(:facts) { { 'os' => { 'family' => 'RedHat', 'name' => 'AlmaLinux', 'release' => { 'major' => '9' } } } }

    it 'uses python3.11, which the runtime needs' do
      expect(exec_named('choria-broker-adapters virtualenv')[:command]).to start_with('/usr/bin/python3.11 -I -m venv ')
      is_expected.to contain_package('python3.11')
      is_expected.not_to contain_package('python3-venv')
    end
  end
end

describe 'choria::broker' do
  let(:node) { 'broker1.example.net' }
  let(:v2) do
    {
      security_provider: 'choria',
      issuers: { 'prod' => 'ab' * 32, 'choria' => 'CD' * 32 },
      choria_certificate: '/etc/choria/tls/cert.pem',
      choria_key: '/etc/choria/tls/key.pem',
      choria_ca: '/etc/choria/tls/ca.pem',
    }
  end

  context 'with the choria provider' do
    let(:params) { v2 }

    it 'writes the issuers sorted by name and the TLS files' do
      expected = [
        'plugin.security.provider = choria',
        'plugin.security.issuer.names = choria, prod',
        "plugin.security.issuer.choria.public = #{'CD' * 32}",
        "plugin.security.issuer.prod.public = #{'ab' * 32}",
        'plugin.security.choria.certificate = /etc/choria/tls/cert.pem',
        'plugin.security.choria.key = /etc/choria/tls/key.pem',
        'plugin.security.choria.ca = /etc/choria/tls/ca.pem',
      ].join("\n")
      is_expected.to contain_file('/etc/choria/broker.conf').with_content(%r{^#{Regexp.escape(expected)}\n\n})
    end
  end

  context 'without issuers' do
    let(:params) { v2.merge(issuers: {}) }

    it { is_expected.to compile.and_raise_error(%r{choria::broker::issuers: expects at least one issuer when security_provider is 'choria'}) }
  end

  context 'without the CA' do
    let(:params) { v2.reject { |key, _| key == :choria_ca } }

    it { is_expected.to compile.and_raise_error(%r{choria::broker::choria_ca: expects a path when security_provider is 'choria'}) }
  end

  context 'with an issuer key that is not 32 bytes of hex' do
    let(:params) { v2.merge(issuers: { 'prod' => 'ab' * 31 }) }

    it { is_expected.to compile.and_raise_error(%r{entry 'prod' expects a match for Choria::IssuerKey}) }
  end

  context 'with issuers for the puppet provider' do
    let(:params) { { issuers: { 'prod' => 'ab' * 32 } } }

    it { is_expected.to compile.and_raise_error(%r{only the 'choria' security_provider uses issuers, not 'puppet'}) }
  end
end

describe 'choria::broker' do
  let(:node) { 'broker1.example.net' }
  let(:unit) { '/etc/systemd/system/choria-broker-adapters.service' }

  context 'with the defaults' do
    it 'runs as root, hardened, restarting on failure but not on a configuration error' do
      [
        'User=root', 'Group=root',
        'Restart=on-failure', 'RestartPreventExitStatus=78',
        'NoNewPrivileges=yes', 'ProtectSystem=strict', 'ProtectHome=yes', 'PrivateTmp=yes',
        'ProtectKernelTunables=yes', 'ProtectControlGroups=yes',
        'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX', 'LockPersonality=yes',
        'MemoryDenyWriteExecute=yes', 'LimitNOFILE=1024'
      ].each do |line|
        is_expected.to contain_file(unit).with_content(%r{^#{Regexp.escape(line)}$})
      end
      # Logging to the journal and no pid file: nothing is writable.
      is_expected.to contain_file(unit).without_content(%r{^ReadWritePaths=})
    end
  end

  context 'with a user, a log file, a pid file and two adapters' do
    let(:params) do
      {
        service_user: 'choria', service_group: 'choria',
        log_file: '/var/log/choria/adapters.log', pid_file: '/run/choria-broker-adapters/adapters.pid',
        adapters: {
          'a' => { 'type' => 'choria_streams', 'ingest' => { 'topic' => 'x' } },
          'b' => { 'type' => 'choria_streams', 'ingest' => { 'topic' => 'y', 'workers' => 40 }, 'stream' => { 'workers' => 60 } },
        },
      }
    end

    it 'may write only the log file and the pid file directory, and has a descriptor per connection' do
      is_expected.to contain_file(unit)
        .with_content(%r{^User=choria\nGroup=choria$})
        .with_content(%r{^ExecStart=\S+ run --config /etc/choria/broker\.conf --pid /run/choria-broker-adapters/adapters\.pid$})
        .with_content(%r{^ReadWritePaths=/var/log/choria/adapters\.log\nReadWritePaths=/run/choria-broker-adapters\n})
        .with_content(%r{^LimitNOFILE=#{1024 + 20 + 100}$})
      is_expected.to contain_file('/var/log/choria/adapters.log').with(
        ensure: 'file', owner: 'choria', group: 'choria', mode: '0640', replace: false,
      ).that_comes_before('Service[choria-broker-adapters]')
    end
  end

  context 'with limit_nofile' do
    let(:params) { { limit_nofile: 65_536 } }

    it { is_expected.to contain_file(unit).with_content(%r{^LimitNOFILE=65536$}) }
  end
end

describe 'choria::broker::install' do
  let(:node) { 'broker1.example.net' }

  it 'is private' do
    is_expected.to compile.and_raise_error(%r{private to the choria module})
  end
end

describe 'choria::broker::config' do
  let(:node) { 'broker1.example.net' }

  it 'is private' do
    is_expected.to compile.and_raise_error(%r{private to the choria module})
  end
end
