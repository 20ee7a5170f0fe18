"""Agent SDKs people use, unchanged, against agent-server: the OpenAI Python SDK's structured
output and client-managed Responses history, then the OpenAI Agents SDK, pydantic-ai and
LangChain, each over two turns whose history the client keeps, and each asking for structured
output.

Run by `cargo xtask sdk` with the environment of check_openai.py (AGENT_URL, AGENT_KEY) plus
AGENT_OFFLINE_URL, a server on the built-in offline model. The fake model behind AGENT_URL
answers "echo: <message>", "you said earlier: <the user message before>" to "recall ...", and
"json <text>" with <text> alone when the request reached it with a JSON response_format: so a
second turn passes only if the server ran it on the history the client sent, and a structured
parse only if the format reached the model.
"""

import asyncio
import os

from openai import AsyncOpenAI, OpenAI
from pydantic import BaseModel

URL = os.environ["AGENT_URL"]
OFFLINE_URL = os.environ["AGENT_OFFLINE_URL"]
KEY = os.environ["AGENT_KEY"]
checks = 0


def check(condition, what):
    global checks
    if not condition:
        raise SystemExit(f"agent sdks: FAILED: {what}")
    checks += 1


class City(BaseModel):
    city: str
    population: int


PARIS = City(city="Paris", population=2100000)
ASK_PARIS = "json " + PARIS.model_dump_json()


def openai_sdk():
    client = OpenAI(base_url=f"{URL}/v1", api_key=KEY, max_retries=0)
    # OpenAI's conversation-state guide: the whole conversation in `input`, store by default.
    history = [
        {"role": "user", "content": "my pet is a cat"},
        {"role": "assistant", "content": "echo: my pet is a cat"},
        {"role": "user", "content": "recall my pet"},
    ]
    first = client.responses.create(model="agent", input=history)
    check(first.output_text == "you said earlier: my pet is a cat", f"whole input: {first.output_text}")
    check(first.store is True, "stored by default")
    # The output items as the SDK returns them (ids, status, annotations), then a new message.
    second = client.responses.create(
        model="agent",
        input=[*history, *[item.model_dump() for item in first.output], {"role": "user", "content": "recall"}],
        store=False,
    )
    check(second.output_text == "you said earlier: recall my pet", f"output items as input: {second.output_text}")
    follow = client.responses.create(model="agent", input="recall it", previous_response_id=first.id)
    check(
        follow.output_text == "you said earlier: recall my pet",
        f"previous_response_id after a whole conversation: {follow.output_text}",
    )

    for name, url, expected in [("fake", URL, PARIS), ("offline", OFFLINE_URL, None)]:
        target = OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        parsed = target.chat.completions.parse(
            model="agent", messages=[{"role": "user", "content": ASK_PARIS}], response_format=City
        )
        city = parsed.choices[0].message.parsed
        check(isinstance(city, City) and (expected is None or city == expected), f"chat parse ({name}): {city}")
        response = target.responses.parse(model="agent", input=ASK_PARIS, text_format=City)
        check(
            isinstance(response.output_parsed, City) and (expected is None or response.output_parsed == expected),
            f"responses parse ({name}): {response.output_parsed}",
        )


async def agents_sdk():
    from agents import Agent, OpenAIResponsesModel, Runner, SQLiteSession, set_tracing_disabled

    set_tracing_disabled(True)
    model = OpenAIResponsesModel(model="agent", openai_client=AsyncOpenAI(base_url=f"{URL}/v1", api_key=KEY, max_retries=0))
    agent = Agent(name="assistant", instructions="Be brief.", model=model)
    first = await Runner.run(agent, "my pet is a rabbit")
    check(first.final_output == "echo: my pet is a rabbit", f"agents sdk turn 1: {first.final_output}")
    second = await Runner.run(agent, first.to_input_list() + [{"role": "user", "content": "recall my pet"}])
    check(second.final_output == "you said earlier: my pet is a rabbit", f"agents sdk to_input_list: {second.final_output}")
    session = SQLiteSession("agents-sdk-check")
    await Runner.run(agent, "my pet is a turtle", session=session)
    third = await Runner.run(agent, "recall my pet", session=session)
    check(third.final_output == "you said earlier: my pet is a turtle", f"agents sdk SQLiteSession: {third.final_output}")
    structured = Agent(name="structured", instructions="Answer as JSON.", model=model, output_type=City)
    result = await Runner.run(structured, ASK_PARIS)
    check(result.final_output == PARIS, f"agents sdk output_type: {result.final_output}")
    await agents_sdk_client_tools()


async def agents_sdk_client_tools():
    """A @function_tool the SDK runs itself (a client-side tool of the server's), over Chat
    Completions: the fake model's "use <name> <args>" calls it and then answers with its result,
    so the final output shows the SDK ran it and sent its result back. With the SDK's own
    needs_approval, the run stops at result.interruptions and goes on once approved or rejected."""
    from agents import Agent, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner, function_tool

    ran = []

    @function_tool
    def lookup(word: str) -> str:
        """Looks a word up in the client's dictionary."""
        ran.append(word)
        return f"{word} means one who acts"

    @function_tool(needs_approval=True)
    def erase(word: str) -> str:
        """Erases a word from the client's dictionary."""
        ran.append(f"erase {word}")
        return f"{word} erased"

    client = AsyncOpenAI(base_url=f"{URL}/v1", api_key=KEY, max_retries=0)
    for name, model in [
        ("chat completions", OpenAIChatCompletionsModel(model="agent", openai_client=client)),
        ("responses", OpenAIResponsesModel(model="agent", openai_client=client)),
    ]:
        ran.clear()
        agent = Agent(name="client tools", instructions="Use the tools.", model=model, tools=[lookup, erase])
        result = await Runner.run(agent, 'use lookup {"word": "agent"}')
        check(result.final_output == "lookup said: agent means one who acts", f"agents sdk @function_tool ({name}): {result.final_output}")
        check(ran == ["agent"], f"agents sdk ran the tool once ({name}): {ran}")
        await agents_sdk_approvals(agent, ran)


async def agents_sdk_approvals(agent, ran):
    from agents import Runner

    for approve in (True, False):
        ran.clear()
        result = await Runner.run(agent, 'use erase {"word": "agent"}')
        check(len(result.interruptions) == 1 and result.final_output is None, f"agents sdk needs_approval stops: {result.interruptions}")
        check(ran == [], "nothing ran before the approval")
        state = result.to_state()
        if approve:
            state.approve(result.interruptions[0])
        else:
            state.reject(result.interruptions[0])
        result = await Runner.run(agent, state)
        if approve:
            check(result.final_output == "erase said: agent erased", f"agents sdk approved: {result.final_output}")
            check(ran == ["erase agent"], f"the approved tool ran once: {ran}")
        else:
            check(result.final_output.startswith("erase said: "), f"agents sdk rejected: {result.final_output}")
            check(ran == [], f"a rejected tool does not run: {ran}")


def pydantic_ai():
    from pydantic_ai import Agent, NativeOutput
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIResponsesModel("agent", provider=OpenAIProvider(base_url=f"{URL}/v1", api_key=KEY))
    agent = Agent(model)
    first = agent.run_sync("my pet is a fish")
    check(first.output == "echo: my pet is a fish", f"pydantic-ai turn 1: {first.output}")
    second = agent.run_sync("recall my pet", message_history=first.all_messages())
    check(second.output == "you said earlier: my pet is a fish", f"pydantic-ai message_history: {second.output}")
    structured = Agent(model, output_type=NativeOutput(City)).run_sync(ASK_PARIS)
    check(structured.output == PARIS, f"pydantic-ai NativeOutput: {structured.output}")


def langchain():
    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="agent", base_url=f"{URL}/v1", api_key=KEY, use_responses_api=True, max_retries=0)
    question = HumanMessage("my pet is a bird")
    first = llm.invoke([question])
    check(first.text == "echo: my pet is a bird", f"langchain turn 1: {first.text}")
    second = llm.invoke([question, first, HumanMessage("recall my pet")])
    check(second.text == "you said earlier: my pet is a bird", f"langchain history: {second.text}")
    structured = llm.with_structured_output(City, method="json_schema").invoke(ASK_PARIS)
    check(structured == PARIS, f"langchain with_structured_output: {structured}")


openai_sdk()
asyncio.run(agents_sdk())
pydantic_ai()
langchain()
print(f"agent sdks: {checks} checks passed (openai, openai-agents, pydantic-ai, langchain-openai)")
