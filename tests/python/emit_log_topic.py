#!/usr/bin/env python
# Tutorial 5, "Topics": publishes a log line under a dotted routing key.
import sys

import pika

from tutorial_env import connection_parameters

connection = pika.BlockingConnection(connection_parameters())
channel = connection.channel()

channel.exchange_declare(exchange="topic_logs", exchange_type="topic")

routing_key = sys.argv[1] if len(sys.argv) > 2 else "anonymous.info"
message = " ".join(sys.argv[2:]) or "Hello World!"
channel.basic_publish(exchange="topic_logs", routing_key=routing_key, body=message)
print(f" [x] Sent {routing_key}:{message}", flush=True)
connection.close()
