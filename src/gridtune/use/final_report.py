"""What a final run's record (final.json) says, for people: its test figures one line each, and
final_report.md. Standard library only.
"""
from __future__ import annotations


def figure_lines(rec: dict) -> list[str]:
    """The test figures, one line each (what the command prints at the end)."""
    t, names = rec["test"], ("micro_f1", "macro_f1", "acc", "bal_acc")
    lines = [f"test {k} = {t[k]:.4f} ({t['n_clips']} clips)" for k in names if t.get(k) is not None]
    if rec["threshold"] is not None:
        lines.append(f"threshold = {rec['threshold']:.2f} ({rec['threshold_source']})")
    return (lines or ["no test evaluation (final.test=none or no test data)"]) + [f"model: {rec['model_path']}"]


def report(rec: dict) -> str:
    """final_report.md: the winner, what the final run trained on, its test figures, its cost."""
    t = rec["test"]
    what = {"irmas_test": f"IRMAS test clips, {t.get('n_windows')} windows of {t.get('window_s')} s "
                          f"every {t.get('hop_s')} s, probabilities averaged per clip",
            "split": "the held-out test split (data.test_fraction)", "none": "none"}[t["mode"]]
    lines = [f"# Final model of sweep `{rec['sweep']}`", "",
             f"- Winner: trial `{rec['trial_id']}` ({rec['objective']} = {rec['winner_value']}), "
             f"overrides applied `{' '.join(rec['overrides'])}`",
             f"- Trained on **{rec['train_on']}** ({rec['n_train_clips']} clips) for {rec['epochs_run']} of "
             f"{rec['epochs']} epochs on {rec['device']}; kept weights: {rec['weights']}",
             f"- Test data: {what}"]
    lines += [f"- {line}" for line in figure_lines(rec)]
    n_skipped = len(rec["skipped_files"]["train"]) + len(rec["skipped_files"]["test"])
    lines += [f"- Skipped files: {n_skipped} (listed in final.json)",
              f"- Wall time {rec['wall_time_s']:.0f} s, git {rec['git_sha']}{' (dirty)' if rec['git_dirty'] else ''}"]
    if rec["config_trial_id"] != rec["trial_id"]:
        lines.append(f"- Note: the command line changed the winner's config (trial id {rec['config_trial_id']})")
    return "\n".join(lines) + "\n"
