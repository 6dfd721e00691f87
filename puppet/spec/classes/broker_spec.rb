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
        .with_content(%r{^ExecStart=/usr/local/bin/choria-broker-adapters run --config /etc/choria/broker\.conf$})
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
    it { is_expected.to contain_file('/etc/choria/broker.conf').with_content(%r{^plugin\.choria\.adapter\.node_data\.type = choria_streams$}) }
  end

  context 'with ensure => absent' do
    let(:params) { { ensure: 'absent', config_file: '/etc/choria/adapters.conf', service_name: 'cba' } }

    it { is_expected.to compile.with_all_deps }
    it { is_expected.to contain_service('cba').with(ensure: 'stopped', enable: false).that_comes_before('File[/etc/choria/adapters.conf]') }
    it { is_expected.to contain_file('/etc/systemd/system/cba.service').with_ensure('absent') }
    it { is_expected.to contain_file('/etc/choria/adapters.conf').with_ensure('absent') }
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

describe 'choria::broker::config' do
  let(:node) { 'broker1.example.net' }

  it 'is private' do
    is_expected.to compile.and_raise_error(%r{private to the choria module})
  end
end
