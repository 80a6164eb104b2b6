#!/usr/bin/env python
# Tutorial 6, "RPC": answers fib(n) requests from rpc_queue on the reply_to queue.
import pika

from tutorial_env import MessageBudget, connection_parameters

connection = pika.BlockingConnection(connection_parameters())
channel = connection.channel()

channel.queue_declare(queue="rpc_queue")
budget = MessageBudget(channel)


def fib(n):
    if n == 0:
        return 0
    elif n == 1:
        return 1
    else:
        return fib(n - 1) + fib(n - 2)


def on_request(ch, method, props, body):
    n = int(body)

    print(f" [.] fib({n})", flush=True)
    response = fib(n)

    ch.basic_publish(
        exchange="",
        routing_key=props.reply_to,
        properties=pika.BasicProperties(correlation_id=props.correlation_id),
        body=str(response),
    )
    ch.basic_ack(delivery_tag=method.delivery_tag)
    budget.spend_one()


channel.basic_qos(prefetch_count=1)
channel.basic_consume(queue="rpc_queue", on_message_callback=on_request)

print(" [x] Awaiting RPC requests", flush=True)
channel.start_consuming()
connection.close()
