<?php
// A webhook receiver as a PHP site would write one (docs/api.md): check the signature with
// hash_hmac and hash_equals, refuse a timestamp older than five minutes, answer 2xx at once.
// Each request is logged as a JSON line: the event and whether its signature held.
$secret = getenv('WEBHOOK_SECRET');
$body = file_get_contents('php://input');
$header = $_SERVER['HTTP_SENDWORX_SIGNATURE'] ?? '';
$timestamp = null;
$signatures = [];
foreach (explode(',', $header) as $part) {
    $pair = explode('=', trim($part), 2);
    if (count($pair) !== 2) {
        continue;
    }
    if ($pair[0] === 't') {
        $timestamp = $pair[1];
    } elseif ($pair[0] === 'v1') {
        $signatures[] = $pair[1];
    }
}
$signed = false;
if ($timestamp !== null && ctype_digit($timestamp) && abs(time() - (int) $timestamp) <= 300) {
    $expected = hash_hmac('sha256', $timestamp . '.' . $body, $secret);
    foreach ($signatures as $signature) {
        if (hash_equals($expected, $signature)) {
            $signed = true;
        }
    }
}
$event = json_decode($body, true);
file_put_contents(
    getenv('WEBHOOK_LOG'),
    json_encode(['signed' => $signed, 'event' => $event]) . "\n",
    FILE_APPEND | LOCK_EX
);
http_response_code($signed ? 204 : 400);
