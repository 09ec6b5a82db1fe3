new EventSource("x")
