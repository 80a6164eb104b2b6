#!/usr/bin/env python
# Tutorial 5, "Topics": receives what matches the binding keys on the command line.
import sys

import pika

from tutorial_env import MessageBudget, connection_parameters

connection = pika.BlockingConnection(connection_parameters())
channel = connection.channel()

channel.exchange_declare(exchange="topic_logs", exchange_type="topic")

result = channel.queue_declare(queue="", exclusive=True)
queue_name = result.method.queue

binding_keys = sys.argv[1:]
if not binding_keys:
    sys.stderr.write("Usage: %s [binding_key]...\n" % sys.argv[0])
    sys.exit(1)

for binding_key in binding_keys:
    channel.queue_bind(exchange="topic_logs", queue=queue_name, routing_key=binding_key)
budget = MessageBudget(channel)

print(" [*] Waiting for logs. To exit press CTRL+C", flush=True)


def callback(ch, method, properties, body):
    print(f" [x] {method.routing_key}:{body}", flush=True)
    budget.spend_one()


channel.basic_consume(queue=queue_name, on_message_callback=callback, auto_ack=True)

channel.start_consuming()
connection.close()
