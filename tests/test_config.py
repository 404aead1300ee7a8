import re

import pytest

from see.config import BENCHMARKS, EXPERIMENTS, load_grid
from see.grid.cells import check_methods


def write(tmp_path, text):
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


GOOD = (
    'models = ["smollm2-135m"]\nmethods = ["baseline", "svd"]\nratios = [5]\n'
    "[tasks]\nwikitext = 2\n"
)


@pytest.mark.parametrize(
    "preset", sorted(p.stem for p in [*BENCHMARKS.glob("*.toml"), *EXPERIMENTS.glob("*.toml")])
)
def test_every_preset_loads_and_validates(preset):
    cfg = load_grid(preset)
    check_methods(cfg)  # method options are checked against each method's own options
    assert cfg.models and cfg.methods and cfg.tasks
    # initial quality in every grid; a fine-tuning experiment may score its tasks alone, and an
    # accuracy control (see/report/controls.py) the one task whose gain it checks
    control = preset.startswith("accuracy-controls")
    assert "wikitext" in cfg.tasks or cfg.finetune is not None or control


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD.replace('"svd"', '"svdd"'), "unknown method 'svdd'"),
        (GOOD.replace("[5]", "[1]"), "compression ratio must be a finite number > 1, got 1"),
        (GOOD.replace("[5]", "[inf]"), "compression ratio must be a finite number > 1, got inf"),
        (GOOD.replace("wikitext = 2", "wikitext = -1"), "limit of task 'wikitext' must be > 0"),
        ('head_policies = ["both"]\n' + GOOD, "unknown head policy 'both'"),
        ("colour = 1\n" + GOOD, "unknown keys \\['colour'\\]"),
        *[  # healing curves: unsorted, zero, negative budgets, and a stage2_steps beside them
            (
                GOOD + f"[heal]\nstage1_steps = 4\nseq_len = 256\ncurve_tokens = {budgets}\n",
                re.escape(f"curve_tokens {budgets} must be increasing"),
            )
            for budgets in ["[65536, 16384]", "[0, 16384]", "[-1024]"]
        ],
        (
            GOOD
            + "[heal]\nstage1_steps = 4\nstage2_steps = 8\nseq_len = 256\ncurve_tokens = [16384]\n",
            "stage2_steps=8 with curve_tokens",
        ),
        (GOOD + "[bench]\ncpu_mmap_threshold = -1\n", "cpu_mmap_threshold=-1; allowed: 0"),
    ],
)
def test_bad_grid_configs_give_clear_errors(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        check_methods(load_grid(write(tmp_path, text)))


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD.replace('"svd"', '"svdd"'), "unknown method 'svdd'; registered methods: "),
        (GOOD + "[method_options]\nsvd = { rank = 3 }\n", "rank"),
        (GOOD + "[method_options]\nsvd = { freq_weight = -1.0 }\n", "freq_weight"),
    ],
)
def test_method_errors_are_named_before_a_run_folder_exists(tmp_path, text, message):
    from see.grid import run_grid

    with pytest.raises(ValueError, match=message):
        run_grid(load_grid(write(tmp_path, text)), tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_config_parses_and_validates_without_torch():
    """`see.config` imports no torch and no subsystem: every preset loads, bad tables fail."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from see.config import BENCHMARKS, EXPERIMENTS, HealConfig, load_grid\n"
        "for path in [*BENCHMARKS.glob('*.toml'), *EXPERIMENTS.glob('*.toml')]: load_grid(path)\n"
        "try: HealConfig(row_loss='mean')\n"
        "except ValueError as err: print('refused:', err)\n"
        "print(sorted(m for m in sys.modules if m.startswith('see')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "refused: healing row_loss='mean'" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "['see', 'see.config']"


def test_unknown_preset_lists_presets():
    with pytest.raises(FileNotFoundError, match="presets: .*smoke"):
        load_grid("no-such-preset")


def test_unknown_model_name_is_a_clear_error():
    from see.models.zoo import ModelLoadError, load_model

    with pytest.raises(ModelLoadError, match="not a zoo short name \\(smollm2-135m.*hub"):
        load_model("no-such-org/no-such-model")


def test_presets_lists_every_top_level_preset_with_its_header_line(capsys):
    from see.cli import main
    from see.config import presets

    listed = presets()
    assert set(listed) == {p.stem for p in BENCHMARKS.glob("*.toml")}
    assert "smoke" in listed and "frontier" in listed and "see-strength" not in listed
    assert all(line and not line.startswith("#") for line in listed.values())
    main(["presets"])
    out = capsys.readouterr().out
    assert all(name in out for name in listed) and "finished experiments" in out


def test_a_finished_experiment_still_resolves_by_name():
    assert load_grid("see-strength").name == "see-strength"  # benchmarks/experiments/
