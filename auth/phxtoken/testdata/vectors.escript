#!/usr/bin/env escript
%% -*- erlang -*-
%%
%% Makes Phoenix.Token test vectors the way Phoenix does, written from
%% plug_crypto 2.1.1's source (elixir-plug/plug_crypto):
%%
%%   lib/plug/crypto.ex  sign/4 -> encode/2: term_to_binary({Data, SignedAtMs,
%%                       MaxAgeSecs}), MaxAgeSecs defaulting to 86400; the key
%%                       from get_secret/3: KeyGenerator with 1000 iterations,
%%                       32 bytes, sha256.
%%   lib/plug/crypto/key_generator.ex  crypto:pbkdf2_hmac(Digest, Secret,
%%                       Salt, Iterations, Length).
%%   lib/plug/crypto/message_verifier.ex  hmac_sha2_sign/3: "SFMyNTY" ++ "." ++
%%                       url_encode64(Payload, padding: false), signed with
%%                       crypto:mac(hmac, sha256, Key, ThatText), then "." ++
%%                       url_encode64(Signature, padding: false).
%%
%% Phoenix.Token.sign/4 (phoenixframework/phoenix lib/phoenix/token.ex) is
%% Plug.Crypto.sign/4 with the endpoint's secret_key_base.
%%
%% Usage: escript vectors.escript SIGNED_AT_MS   (or "now": the current time,
%% as Plug.Crypto's now_ms/0). Writes the JSON array testdata/vectors.json
%% holds to stdout:
%%
%%   escript testdata/vectors.escript 1767225600000 > testdata/vectors.json

main([At]) ->
    SignedAt = case At of
                   "now" -> os:system_time(millisecond);
                   _ -> list_to_integer(At)
               end,
    Objs = [vector(SignedAt, C) || C <- cases()],
    io:put_chars(["[\n", lists:join(",\n", Objs), "\n]\n"]);
main(_) ->
    io:put_chars(standard_error, "usage: vectors.escript SIGNED_AT_MS|now\n"),
    halt(2).

-define(SECRET, <<"Jt3lq9P0m1Vd6cQe0yW3uA8s0b7xZk2nR5hT4gF6jL8oP1iU9yT7rE3wQ2aS4dF6">>).

%% {Name, Data, Expect} signed with ?SECRET, salt "pubsub", max_age 86400,
%% OTP 25's default encoding (latin-1 atoms as ATOM_EXT); then Opts cases.
cases() ->
    Big = 1 bsl 100,
    Long = binary:copy(<<"x">>, 512),
    [{"binary", <<"alice">>, {user, <<"alice">>}},
     {"binary utf8", <<"j", 16#c3, 16#bc, "rgen">>, {user, <<"j", 16#c3, 16#bc, "rgen">>}},
     {"binary 512 bytes", Long, {user, Long}},
     {"small integer", 42, {user, <<"42">>}},
     {"integer", 70000, {user, <<"70000">>}},
     {"negative integer", -5, {user, <<"-5">>}},
     {"integer 32-bit max", 2147483647, {user, <<"2147483647">>}},
     {"bignum 2^40", 1 bsl 40, {user, integer_to_binary(1 bsl 40)}},
     {"bignum 2^100", Big, {user, integer_to_binary(Big)}},
     {"negative bignum", -(1 bsl 70), {user, integer_to_binary(-(1 bsl 70))}},
     {"map atom user_id binary", #{user_id => <<"u1">>}, {user, <<"u1">>}},
     {"map atom user_id integer", #{user_id => 7}, {user, <<"7">>}},
     {"map binary id", #{<<"id">> => <<"abc">>}, {user, <<"abc">>}},
     {"map atom id bignum", #{id => 12345678901234}, {user, <<"12345678901234">>}},
     {"map user_id wins over id", #{id => 1, user_id => 2}, {user, <<"2">>}},
     {"map with other keys", #{user_id => <<"a">>, roles => [admin, <<"x">>, 1.5],
                               meta => #{nested => {1, 2.5, nil}, list => "abc"}},
      {user, <<"a">>}},
     {"struct-like map", #{'__struct__' => 'Elixir.User', id => 9, name => <<"n">>}, {user, <<"9">>}},
     {"list", [<<"a">>, 1000], {error, "user_claim"}},
     {"list of small integers", [1, 2], {error, "user_claim"}},
     {"empty list", [], {error, "user_claim"}},
     {"charlist", "abc", {error, "user_claim"}},
     {"float", 3.14, {error, "user_claim"}},
     {"atom", admin, {error, "user_claim"}},
     {"nil", nil, {error, "user_claim"}},
     {"tuple", {user, 1}, {error, "user_claim"}},
     {"empty binary", <<>>, {error, "user_claim"}},
     {"blank binary", <<"  \t">>, {error, "user_claim"}},
     {"binary 513 bytes", <<Long/binary, "x">>, {error, "user_claim"}},
     {"binary not utf8", <<255, 254>>, {error, "user_claim"}},
     {"map without id", #{name => <<"x">>}, {error, "user_claim"}},
     {"map id list", #{user_id => [1]}, {error, "user_claim"}},
     {"map id empty", #{user_id => <<>>}, {error, "user_claim"}},
     {"map atom and binary user_id", #{user_id => <<"a">>, <<"user_id">> => <<"b">>}, {error, "user_claim"}},
     {"bignum 64 bytes", (1 bsl 512) - 1, {user, integer_to_binary((1 bsl 512) - 1)}},
     %% The decoder bounds integers at 64 bytes (155 digits).
     {"bignum 65 bytes", 1 bsl 512, {error, "malformed"}}]
    ++ [{N, D, E, #{opts => [{minor_version, 2}]}} || {N0, D, E} <- utf8_cases(), N <- [N0 ++ " (utf8 atoms)"]]
    ++ [{"max_age infinity", <<"inf">>, {user, <<"inf">>}, #{max_age => infinity}},
        {"max_age 60 overridden", <<"short">>, {user, <<"short">>}, #{max_age => 60}},
        {"other salt and secret", 99, {user, <<"99">>},
         #{salt => <<"user auth">>, secret => <<"kjoy3o1zeidquwy1398juxzldjlksahdk3">>}},
        %% term_to_binary compresses only when that makes the term smaller:
        %% a short one is written as usual.
        {"compressed short", <<"alice">>, {user, <<"alice">>}, #{opts => [compressed]}},
        {"compressed", binary:copy(<<"a">>, 200), {error, "malformed"}, #{opts => [compressed]}}].

%% Maps with atom keys as OTP 26+ (Elixir 1.15+) encode them by default:
%% SMALL_ATOM_UTF8_EXT.
utf8_cases() ->
    [{"map atom user_id binary", #{user_id => <<"u1">>}, {user, <<"u1">>}},
     {"map atom id integer", #{id => 5}, {user, <<"5">>}},
     {"atom", admin, {error, "user_claim"}}].

vector(SignedAt, {Name, Data, Expect}) ->
    vector(SignedAt, {Name, Data, Expect, #{}});
vector(SignedAt, {Name, Data, Expect, O}) ->
    Secret = maps:get(secret, O, ?SECRET),
    Salt = maps:get(salt, O, <<"pubsub">>),
    MaxAge = maps:get(max_age, O, 86400),
    Payload = term_to_binary({Data, SignedAt, MaxAge}, maps:get(opts, O, [])),
    Token = sign(Payload, key(Secret, Salt)),
    Fields = [{"name", str(Name)}, {"secret", str(Secret)}, {"salt", str(Salt)},
              {"token", str(Token)}, {"signed_at_ms", integer_to_list(SignedAt)}]
             ++ expect(Expect),
    ["  {", lists:join(", ", [[str(K), ": ", V] || {K, V} <- Fields]), "}"].

expect({user, Id}) -> [{"user_id", str(Id)}];
expect({error, Kind}) -> [{"error", str(Kind)}].

key(Secret, Salt) -> crypto:pbkdf2_hmac(sha256, Secret, Salt, 1000, 32).

sign(Payload, Key) ->
    PlainText = <<"SFMyNTY.", (b64url(Payload))/binary>>,
    Signature = crypto:mac(hmac, sha256, Key, PlainText),
    <<PlainText/binary, ".", (b64url(Signature))/binary>>.

%% Base.url_encode64(_, padding: false); OTP 25's base64 has no url mode.
b64url(Bin) ->
    << <<(url_char(C))>> || <<C>> <= base64:encode(Bin), C =/= $= >>.

url_char($+) -> $-;
url_char($/) -> $_;
url_char(C) -> C.

%% A JSON string: the vectors' texts are UTF-8; bytes that are not valid
%% UTF-8 (the "not utf8" case's user id is not written) are escaped as is.
str(S) when is_list(S) -> str(list_to_binary(S));
str(B) -> [$", [esc(C) || <<C>> <= B], $"].

esc($") -> "\\\"";
esc($\\) -> "\\\\";
esc(C) when C < 16#20 -> io_lib:format("\\u~4.16.0b", [C]);
esc(C) -> C.
