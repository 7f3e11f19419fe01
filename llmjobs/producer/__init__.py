"""The producer: read an input file, validate every row, store the jobs and publish them."""

from llmjobs.producer.options import SubmitOptions, SubmitOutcome
from llmjobs.producer.submit import submit_file, submit_rows

__all__ = ["SubmitOptions", "SubmitOutcome", "submit_file", "submit_rows"]
