"""What the API and the worker both run on: configuration, logging, the database's unit of work
and engines, Redis locks, the queue, and final-state notices."""
