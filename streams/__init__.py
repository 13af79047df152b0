"""Market inventory snapshots, kept up to date from Storage Guard's change stream."""
