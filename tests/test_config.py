from agentmetrics.alerting.config import find_config, load_config


def test_config_found_in_parent_folder_within_the_project(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "agentmetrics.toml").write_text("[costs]\ndefault_hourly_rate = 3.5\n")
    sub = tmp_path / "src" / "pkg"
    sub.mkdir(parents=True)
    assert find_config(sub) == tmp_path / "agentmetrics.toml"
    assert load_config(tmp_path / "agentmetrics.toml") == {"costs": {"default_hourly_rate": 3.5}}


def test_search_stops_at_the_project_root(tmp_path):
    (tmp_path / "agentmetrics.toml").write_text("[costs]\ndefault_hourly_rate = 1\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert find_config(project) is None


def test_pyproject_table_is_used_only_when_present(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.agentmetrics.costs]\ndefault_hourly_rate = 2\n")
    assert find_config(tmp_path) == tmp_path / "pyproject.toml"
    assert load_config(tmp_path / "pyproject.toml") == {"costs": {"default_hourly_rate": 2}}
