"""Process runtime: start a job's process with its slice env, stop with grace, adopt after restart."""
