"""`awqserve chat`: a terminal chat client over the OpenAI HTTP API (a running server, or one started
in this process on a private loopback port). It never touches the engine directly."""
