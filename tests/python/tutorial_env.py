"""What the tutorial programs take from the environment, so the tests can
point them at any broker and stop long-running consumers.

AMQP_URL                  broker to use (the tutorials' localhost by default)
TUTORIAL_MAX_MESSAGES     a consumer stops after this many messages (unset:
                          it consumes forever, as in the tutorial)
TUTORIAL_SHOW_REDELIVERED the worker also prints " [x] redelivered=True|False"
"""
import os

import pika


def connection_parameters():
    return pika.URLParameters(os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/%2F"))


def max_messages():
    value = os.environ.get("TUTORIAL_MAX_MESSAGES")
    return int(value) if value else None


def show_redelivered():
    return os.environ.get("TUTORIAL_SHOW_REDELIVERED") == "1"


class MessageBudget:
    """Counts handled messages; stops consuming once the budget is spent."""

    def __init__(self, channel):
        self.channel = channel
        self.left = max_messages()

    def spend_one(self):
        if self.left is None:
            return
        self.left -= 1
        if self.left <= 0:
            self.channel.stop_consuming()
