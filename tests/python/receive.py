#!/usr/bin/env python
# Tutorial 1, "Hello World!": the consumer.
import os
import sys

import pika

from tutorial_env import MessageBudget, connection_parameters


def main():
    connection = pika.BlockingConnection(connection_parameters())
    channel = connection.channel()

    channel.queue_declare(queue="hello")
    budget = MessageBudget(channel)

    def callback(ch, method, properties, body):
        print(f" [x] Received {body}", flush=True)
        budget.spend_one()

    channel.basic_consume(queue="hello", on_message_callback=callback, auto_ack=True)

    print(" [*] Waiting for messages. To exit press CTRL+C", flush=True)
    channel.start_consuming()
    connection.close()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("Interrupted", flush=True)
        try:
            sys.exit(0)
        except SystemExit:
            os._exit(0)
