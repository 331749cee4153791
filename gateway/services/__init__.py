"""gRPC services: translate protobuf requests into pipeline asks and results into responses.

Services never turn errors into statuses (the interceptor does) and never skip a stage (the
pipeline runs them all).
"""
