#!/usr/bin/env python
# Tutorial 1, "Hello World!": the producer.
import pika

from tutorial_env import connection_parameters

connection = pika.BlockingConnection(connection_parameters())
channel = connection.channel()

channel.queue_declare(queue="hello")

channel.basic_publish(exchange="", routing_key="hello", body="Hello World!")
print(" [x] Sent 'Hello World!'", flush=True)
connection.close()
