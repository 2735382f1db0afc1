# Developer shortcuts. Every recipe is a plain command, so nothing here is needed on CI.

# Format the workspace.
fmt:
    cargo fmt --all

# Formatting and lints, as the project enforces them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Install the pinned Claude Code CLI and run every test.
test *args:
    ./scripts/test.sh {{args}}

# Benchmarks; results are recorded in docs/benchmarks.md.
bench:
    cargo bench --workspace --locked

# Start the server on the filesystem store.
run *args:
    ./scripts/run.sh {{args}}
