# @summary Installs choria-broker-adapters into its own virtualenv.
#
# The system interpreter's packages stay untouched (Debian 12 and EL 9 mark that interpreter
# as externally managed, PEP 668): `python -m venv` creates `install_dir`, and that virtualenv's
# pip installs the package and its dependencies. Every command has a guard that asks the
# virtualenv itself what it holds, so a run that finds the wanted release installed runs no
# command and reports no change.
#
# @api private
class choria::broker::install {
  # stdlib's assert_private() without depending on stdlib.
  if $caller_module_name != $module_name {
    fail("${name} is private to the ${module_name} module: use class choria::broker")
  }

  $venv = $choria::broker::install_dir
  $package_ensure = $choria::broker::package_ensure
  $source = $choria::broker::package_source

  if $choria::broker::ensure == 'present' {
    # -I (isolated): neither the working directory nor PYTHON* variables change what it sees.
    $python = "${shellquote("${venv}/bin/python")} -I"

    # Which release the virtualenv must hold: the version asked for, or the one in a file's
    # name; undef for `present` and `latest` from an index.
    $wanted = $source ? {
      Choria::Path => $choria::broker::source_version,
      default      => $package_ensure ? {
        Choria::PackageVersion => $package_ensure,
        default                => undef,
      },
    }
    $requirement = $source ? {
      Choria::Path => shellquote($source),
      default      => $wanted ? {
        undef   => 'choria-broker-adapters',
        default => shellquote("choria-broker-adapters==${wanted}"),
      },
    }
    $index = $source ? {
      Choria::IndexUrl => " --index-url ${shellquote($source)}",
      default          => '',
    }
    $upgrade = ($package_ensure == 'latest' and $source !~ Choria::Path) ? {
      true    => ' --upgrade',
      default => '',
    }

    # Exit 0 when the virtualenv holds the package (at argv[1], when given), 1 otherwise.
    $holds_script = @(PY)
      import importlib.metadata, sys
      versions = [d.version for d in importlib.metadata.distributions(name="choria-broker-adapters")]
      sys.exit(0 if versions and (len(sys.argv) < 2 or versions == sys.argv[1:]) else 1)
      | PY
    # Exit 1 when pip's JSON list of outdated packages (on stdin) names this one.
    $current_script = @(PY)
      import json, sys
      outdated = {p["name"].lower().replace("_", "-") for p in json.load(sys.stdin)}
      sys.exit(1 if "choria-broker-adapters" in outdated else 0)
      | PY
    $holds = "${python} -c ${shellquote($holds_script)}"
    $holds_wanted = $wanted ? {
      undef   => $holds,
      default => "${holds} ${shellquote($wanted)}",
    }
    # `latest` from an index: also ask the index whether it has a newer release.
    $guard = ($package_ensure == 'latest' and $source !~ Choria::Path) ? {
      true    => join([
          "${holds} && ${python} -m pip list --outdated --format=json --disable-pip-version-check${index}",
          " | ${python} -c ${shellquote($current_script)}",
      ], ''),
      default => $holds_wanted,
    }

    $choria::broker::python_packages.each |String $os_package| {
      package { $os_package:
        ensure => installed,
        before => Exec['choria-broker-adapters virtualenv'],
      }
    }

    exec { 'choria-broker-adapters virtualenv':
      command  => "${shellquote($choria::broker::python)} -I -m venv ${shellquote($venv)}",
      creates  => "${venv}/bin/python",
      provider => shell,
    }
    -> exec { 'choria-broker-adapters package':
      # The second command fails the run when pip installed something other than the wanted
      # release (an index that lacks it), rather than retrying on every run.
      command  => join([
          "${python} -m pip install --disable-pip-version-check --no-input --quiet",
          "${index}${upgrade} ${requirement} && ${holds_wanted}",
      ], ''),
      unless   => $guard,
      provider => shell,
      timeout  => 900,
    }
  } else {
    file { $venv:
      ensure => absent,
      force  => true,
      backup => false,
    }
  }
}
