"""/soap and /nodeworx/soap: GET ?wsdl describes the service, POST runs `route` (SOAP 1.1/1.2)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from sendworx.api.dispatcher import Dispatcher
from sendworx.transports import soap
from sendworx.transports.http_body import GONE, TooLarge, peer_of, read_capped


def soap_endpoint(dispatcher: Dispatcher) -> Callable[[Request], Awaitable[Response]]:
    limit = dispatcher.max_request_bytes

    async def endpoint(request: Request) -> Response:
        if request.method == "GET":
            if "wsdl" not in {key.lower() for key in request.query_params}:
                return Response("add ?wsdl for the service description\n", status_code=404)
            # PHP posts to the address in the WSDL: it must be where the client reached us.
            location = str(request.url.replace(query="", fragment=""))
            return Response(soap.wsdl(location), media_type="text/xml; charset=utf-8")
        content_type = request.headers.get("content-type", "")
        try:
            version, routed = soap.parse_request(await read_capped(request, limit), content_type)
        except ClientDisconnect:
            return GONE
        except TooLarge:
            version = soap.version_for(content_type)
            return _fault(version, f"request larger than {limit} bytes")
        except soap.SoapFault as error:
            return _fault(error.version, error.message)
        reply = await dispatcher.dispatch(routed, peer_of(request.scope), "soap")
        return Response(
            soap.encode_reply(version, reply.as_struct()), media_type=version.content_type
        )

    return endpoint


def _fault(version: soap.SoapVersion, message: str) -> Response:
    return Response(
        soap.encode_fault(version, message),
        status_code=soap.fault_http_status(version),
        media_type=version.content_type,
    )
