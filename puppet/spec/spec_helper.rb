# rspec-puppet set-up that needs nothing from the network: a temporary module path holding only
# a `choria` symlink to this module, and no site hiera (the module's own data supplies defaults).
require 'tmpdir'
require 'rspec-puppet'

module_root = File.expand_path('..', __dir__)
module_path = Dir.mktmpdir('choria-rspec-modules')
File.symlink(module_root, File.join(module_path, 'choria'))
at_exit { FileUtils.remove_entry(module_path) }

RSpec.configure do |c|
  # Not rspec-puppet's own fixtures layout (it would create spec/fixtures with a symlink loop).
  c.setup_fixtures = false
  c.module_path = module_path
  c.manifest = File.join(module_path, 'site.pp')
  c.default_facts = {
    'kernel' => 'Linux',
    'os' => { 'family' => 'Debian', 'name' => 'Debian', 'release' => { 'major' => '12' } },
    'networking' => { 'fqdn' => 'broker1.example.net', 'domain' => 'example.net' },
    'service_provider' => 'systemd',
  }
end
