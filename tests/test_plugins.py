"""Plugins: the user's modules imported by name or path, and the errors that name them."""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

from sgdlab.config import validate_config
from sgdlab.errors import ConfigError
from sgdlab.models import MODELS
from sgdlab.plugins import (PLUGINS_ENV, env_plugins, exported_plugins, given_plugins,
                            import_env_plugins, import_plugin, import_plugins, plugin_key)
from sgdlab.testing import TINY_RUN as TINY
from sgdlab.testing import user_model_plugin

# a model of the user's own, as a plugin registers it
# a model of the user's own, as a plugin registers it
PLUGIN = user_model_plugin("{name}")


@pytest.fixture(autouse=True)
def _registry_as_it_was():
    """The models a test's plugins register are gone after it (other tests list them all)."""
    before = set(MODELS)
    yield
    for name in set(MODELS) - before:
        del MODELS[name]


def _plugin(tmp_path, text: str = PLUGIN) -> tuple[str, str]:
    """(a plugin module's unique name, the model name it registers), written to tmp_path."""
    tag = uuid.uuid4().hex[:8]
    module, model = f"plugin_{tag}", f"user-linear-{tag}"
    (tmp_path / f"{module}.py").write_text(text.replace("{name}", model))
    return module, model


def test_a_config_names_a_plugin_module_that_registers_its_model(tmp_path, monkeypatch):
    module, model = _plugin(tmp_path)
    raw = {**TINY, "model": {"name": model}}
    with pytest.raises(ConfigError, match=f"unknown model '{model}' .*plugins: "):
        validate_config(raw)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = validate_config({**raw, "plugins": [module]})
    assert module in sys.modules and model in MODELS and cfg["plugins"] == [module]
    # none given: no plugins key, as the configs stored before it
    assert "plugins" not in validate_config(TINY)


def test_a_plugin_given_as_a_file_is_recorded_by_its_absolute_path(tmp_path, monkeypatch):
    module, model = _plugin(tmp_path)
    monkeypatch.chdir(tmp_path)
    cfg = validate_config({**TINY, "model": {"name": model}, "plugins": [f"{module}.py"]})
    assert cfg["plugins"] == [str(tmp_path.resolve() / f"{module}.py")]
    assert validate_config(cfg) == cfg           # imported once: registered once
    assert sys.modules[module].__file__ == str(tmp_path.resolve() / f"{module}.py")


def test_a_plugin_that_cannot_be_imported_is_named_with_its_reason(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"^plugins\[1\]: cannot import plugin 'nope_x': no "
                                          r"module named 'nope_x' \(put its folder on "
                                          r"PYTHONPATH, or give the path of its \.py file\)"):
        import_plugins(["json", "nope_x"])
    broken, _ = _plugin(tmp_path, "import no_such_dependency_of_it\n")
    with pytest.raises(ConfigError, match=f"importing plugin '{broken}' failed: "
                                          "ModuleNotFoundError: No module named "
                                          "'no_such_dependency_of_it'"):
        import_plugin(broken, where="--plugin")
    failing, _ = _plugin(tmp_path, "raise RuntimeError('its own bug')\n")
    with pytest.raises(ConfigError, match=f"^--plugin: importing plugin '{failing}' failed: "
                                          "RuntimeError: its own bug"):
        import_plugin(failing, where="--plugin")
    with pytest.raises(ConfigError, match=r"^plugins\[0\]: cannot import plugin '.*gone\.py': "
                                          "no such file"):
        import_plugins([str(tmp_path / "gone.py")])


def test_plugins_pass_to_child_processes_through_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(PLUGINS_ENV, "a.b")
    with exported_plugins(["a.b", "c", "./x.py", "c"]):
        assert env_plugins() == ["a.b", "c", str((tmp_path.cwd() / "x.py").resolve())]
    # the command's own plugins are not left in the caller's environment
    assert env_plugins() == ["a.b"]
    monkeypatch.delenv(PLUGINS_ENV)
    with pytest.raises(RuntimeError):
        with exported_plugins(["c"]):
            assert env_plugins() == ["c"]
            raise RuntimeError
    assert PLUGINS_ENV not in __import__("os").environ


def test_import_env_plugins_imports_what_the_variable_names(tmp_path, monkeypatch):
    module, model = _plugin(tmp_path)
    monkeypatch.setenv(PLUGINS_ENV, str(tmp_path / f"{module}.py"))
    import_env_plugins()
    assert model in MODELS
    monkeypatch.setenv(PLUGINS_ENV, str(tmp_path / "gone.py"))
    with pytest.raises(ConfigError, match=r"^\$SGDLAB_PLUGINS\[0\]: .*gone\.py': no such file"):
        import_env_plugins()


def test_a_plugin_path_with_a_tilde_is_the_home_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    module, model = _plugin(tmp_path)
    assert plugin_key(f"~/{module}.py") == str(tmp_path.resolve() / f"{module}.py")
    import_plugin(f"~/{module}.py")
    assert model in MODELS


@pytest.fixture
def _modules_as_they_were():
    """sys.modules after the test holds what it held before (a wrongly kept plugin is gone)."""
    before = dict(sys.modules)
    yield
    for name in set(sys.modules) - set(before):
        if name.startswith("plugin_"):
            del sys.modules[name]
    sys.modules.update({k: v for k, v in before.items() if sys.modules.get(k) is not v})


@pytest.mark.usefixtures("_modules_as_they_were")
def test_a_plugin_file_named_as_another_module_is_refused_and_leaves_it_in_place(tmp_path,
                                                                                  monkeypatch):
    import json

    (tmp_path / "json.py").write_text(PLUGIN.replace("{name}", "user-json-model"))
    with pytest.raises(ConfigError, match=r"^plugins\[0\]: cannot import plugin '.*json\.py': "
                                          r"it is imported as module 'json', the name of "
                                          r"another module \(.*json.*\); rename"):
        import_plugins([str(tmp_path / "json.py")])
    assert sys.modules["json"] is json and "user-json-model" not in MODELS
    # its import failing: the process's json was deleted from sys.modules with it
    (tmp_path / "json.py").write_text("raise RuntimeError('its own bug')\n")
    with pytest.raises(ConfigError):
        import_plugin(str(tmp_path / "json.py"))
    assert sys.modules["json"] is json
    # a module that nobody imported yet, which `import NAME` would find on sys.path
    name = f"plugin_installed_{uuid.uuid4().hex[:8]}"
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / f"{name}.py").write_text("X = 'installed'\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    (tmp_path / f"{name}.py").write_text("X = 'plugin'\n")
    with pytest.raises(ConfigError, match=f"module '{name}', the name of another module "
                                          rf"\({tmp_path.resolve() / 'site' / name}\.py\)"):
        import_plugin(str(tmp_path / f"{name}.py"))
    assert name not in sys.modules and __import__(name).X == "installed"


@pytest.mark.usefixtures("_modules_as_they_were")
def test_two_plugin_files_of_one_name_are_refused_not_swapped(tmp_path):
    module, model = _plugin(tmp_path)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / f"{module}.py").write_text(PLUGIN.replace("{name}", model + "-b"))
    first = import_plugin(str(tmp_path / f"{module}.py"))
    with pytest.raises(ConfigError, match=f"'{module}', the name of another module "
                                          rf"\({tmp_path.resolve() / module}\.py\)"):
        import_plugin(str(tmp_path / "b" / f"{module}.py"))
    assert sys.modules[module] is first and model + "-b" not in MODELS
    # the same file again, by another spelling of its path: the module imported
    assert import_plugin(str(tmp_path / "b" / ".." / f"{module}.py")) is first


def test_a_plugin_file_whose_import_failed_is_imported_again_once_fixed(tmp_path):
    """A failed import leaves no half-run module under the plugin's name: the file, fixed,
    imports and registers (a stale entry was returned as "imported already")."""
    module, model = _plugin(tmp_path, "raise RuntimeError('not yet')\n")
    path = tmp_path / f"{module}.py"
    with pytest.raises(ConfigError, match="RuntimeError: not yet"):
        import_plugin(str(path))
    assert module not in sys.modules
    path.write_text(PLUGIN.replace("{name}", model))
    import_plugin(str(path))
    assert model in MODELS


def test_a_failing_plugin_is_named_with_the_line_of_its_own_code(tmp_path):
    module, _ = _plugin(tmp_path, "x = 1\nraise RuntimeError('its own bug')\n")
    path = tmp_path / f"{module}.py"
    with pytest.raises(ConfigError) as e:
        import_plugin(str(path))
    assert str(e.value).endswith(f"RuntimeError: its own bug ({path.resolve()}, line 2)")


def test_empty_entries_of_the_variable_and_surrounding_space_are_no_plugins(tmp_path,
                                                                            monkeypatch):
    """``a::b`` (an empty entry, as PYTHONPATH may have) names two plugins; a name with spaces
    around it names the module."""
    monkeypatch.setenv(PLUGINS_ENV, os.pathsep.join(["json", "", " ", "json"]))
    assert env_plugins() == ["json", "json"]
    assert import_plugin("  json ") is sys.modules["json"]


def _moved_plugin(tmp_path) -> tuple[dict, str, str]:
    """(a config recording a plugin file that is gone, the file it was moved to, its model)."""
    module, model = _plugin(tmp_path)
    (tmp_path / "new").mkdir()
    moved = tmp_path / "new" / f"{module}.py"
    (tmp_path / f"{module}.py").rename(moved)
    gone = str(tmp_path.resolve() / f"{module}.py")
    return {**TINY, "model": {"name": model}, "plugins": [gone]}, str(moved.resolve()), model


def test_a_recorded_plugin_file_that_is_gone_asks_for_its_new_path(tmp_path, monkeypatch):
    monkeypatch.delenv(PLUGINS_ENV, raising=False)
    raw, _, _ = _moved_plugin(tmp_path)
    with pytest.raises(ConfigError, match=rf"^plugins\[0\]: cannot import plugin "
                                          rf"'{raw['plugins'][0]}': no such file \(moved or "
                                          r"renamed\? give its new path with --plugin "
                                          r"NEWPATH\)"):
        validate_config(raw)


@pytest.mark.usefixtures("_modules_as_they_were")
def test_a_plugin_file_given_stands_in_for_a_recorded_one_that_is_gone(tmp_path, monkeypatch,
                                                                       capsys):
    monkeypatch.delenv(PLUGINS_ENV, raising=False)
    raw, moved, model = _moved_plugin(tmp_path)
    other = tmp_path / "plugin_other.py"        # given too, of another name: not used
    other.write_text("X = 1\n")
    with given_plugins([str(other), moved]):
        import_plugins([str(other), moved], where="--plugin")
        cfg = validate_config(raw)
    assert model in MODELS and cfg["plugins"] == [moved]
    assert capsys.readouterr().err == (f"sgdlab: note: plugin {raw['plugins'][0]} recorded by "
                                       f"the run is gone; using {moved}\n")
    # from $SGDLAB_PLUGINS, as given, by a new name: the one given file stands in
    renamed = tmp_path / "new" / "plugin_renamed.py"
    monkeypatch.setenv(PLUGINS_ENV, str(renamed))
    with pytest.raises(ConfigError, match="no such file"):
        validate_config(raw)        # the variable names no file either
    (tmp_path / "new" / Path(moved).name).rename(renamed)
    del MODELS[model]       # (as in a new process: the renamed file registers it again)
    assert validate_config(raw)["plugins"] == [str(renamed.resolve())]
    assert f"is gone; using {renamed.resolve()}" in capsys.readouterr().err
