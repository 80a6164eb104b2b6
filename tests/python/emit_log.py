#!/usr/bin/env python
# Tutorial 3, "Publish/Subscribe": publishes a log line to the fanout exchange.
import sys

import pika

from tutorial_env import connection_parameters

connection = pika.BlockingConnection(connection_parameters())
channel = connection.channel()

channel.exchange_declare(exchange="logs", exchange_type="fanout")

message = " ".join(sys.argv[1:]) or "info: Hello World!"
channel.basic_publish(exchange="logs", routing_key="", body=message)
print(f" [x] Sent {message}", flush=True)
connection.close()
