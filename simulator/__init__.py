"""A local stand-in for the OpenAI, Anthropic and Mistral chat APIs, for demos, tests and
capacity planning (design §6). Start it with `start_simulator(SimulatorConfig())`."""
