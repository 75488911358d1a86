"""What jobs leave behind: resumable results, W&B runs, and the ablation table of a sweep."""
