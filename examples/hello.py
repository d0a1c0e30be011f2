"""The hello app: ``swell run examples.hello:app`` then ``curl localhost:8000/?name=Ada``."""

from starlette.requests import Request

import swell as serve


@serve.deployment(num_replicas=2, max_ongoing_requests=100)
class Hello:
    def __init__(self, greeting: str):
        self.greeting = greeting

    async def __call__(self, request: Request) -> dict[str, str]:
        return {"message": f"{self.greeting}, {request.query_params.get('name', 'world')}"}


app = Hello.bind("Hello")
