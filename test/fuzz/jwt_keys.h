// Test-only keys for fuzz_jwt: generated for this fuzzer with `openssl genpkey`, used nowhere else.
// The fuzzer signs its seed tokens with them and checks every accepted token against them.
#pragma once

inline constexpr char kRsaPrivatePem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCzhYXGM+zZ5VHx\n"
    "SKaYiZ/taTACA3ctJls2akO1tJeC6siQ2DaYMqQ4QWrWnoQIgTjl930YNFU+vETx\n"
    "ta49V4ix+dVlciVmEPVPETp2mYGDfIk3jPto4BEgxqciOMe85JJeqLfU4VZPOj60\n"
    "n0ylca9NZVY9IdZlVqh+U7PXHzOr/4runMMIgL8TVRC+1YwwWdzXOW1Yb0HWOstd\n"
    "wEngI2RDVb7Z9ITQNili3WzUOIyAdpJ76QNKks8RnRZyhTEeUaWdnCiJj3r/WK9Z\n"
    "pP1L2JDvo97RIh1nZsIT7xQ634x1h5IWspF/fX02uAW5N5FIYBO5SeVzuwtFA3vV\n"
    "7M/4i0/NAgMBAAECggEAAKLsNXwA+UjHK0F5rbgXLrfyaUoVMGjJZqj7x8zLGLYN\n"
    "CKPA6yCK1SmONRKSH0GYr7VakS0Q/ExIkPQhmQASxlFqFeumAaBKblb+S7tW6oi/\n"
    "fR3tKj2ucdz3wgxM0Pjyd+QbOrr4cQbLgB0XICMGCb0z5WWVpVL9p+z+CeOHbbL/\n"
    "CDZY3JUW6XJCaVpX+gPFuKqfNEde5a/07Za/vRuPrkeTQvaa+ccIioit+dDmQjoQ\n"
    "tai/C0f9dwF5Ex9XAzs9+X87jbd9yYitnx6R7yDiSxY/3jTBjiumVQHp9zubzflv\n"
    "s0kHQkLrOqWShxKYbfLY26qsiB9DIjis1w7cq04vQQKBgQDbMrPbeTSY1wMPHST0\n"
    "lxGLF3crxO8lhW7qBcaQqlY9bjFkMA681S2uFbNDtxkqZyHesXfcntW2BSjQ5zBL\n"
    "mWDaCAsqQ7kCQXze8db4gtktsaNo275J3zM0kUHjvxVNSwJKyJm/GasYbUBuLH76\n"
    "9eAImpmH6piP0ErC2PuasnI1EQKBgQDRqX6tPRQk6R/YMBmkDxdku1cmgZq6jY9V\n"
    "ikhUXSNUjT0Zy3epcOw3dmzQDRlsnHaQGaQp8jhrU2jMDOUXk1n64nf2P4tbVKsp\n"
    "JR1LRPlp4q748iGcJwLiXU8xbHcyxUA4L4svAJ8q3eMD7HKdzZqzgaNKqVDYlOLk\n"
    "nz6jpKb+/QKBgD7P/LI7vVK+6mV+WISudZyCEOg9+rmpzurI1OnHpgbceNLY4qBC\n"
    "BmEIXuJcqZ15CD+kY1CZQ2xxdgzG8xP208Ym3+wwk+eNlJbeflegR1PMv6LgtVq9\n"
    "1xKNPXBh5VzMzc9YRJZ6aIkLZZcssQaBRr2wb6Z/F1C+w22qeA8Qa6HBAoGAI6eI\n"
    "VFujtlcyxCgB5EVwu/+j5Xd64ai7LFfUzwv7uyA9uMpCMj1y3ke0X3kqzq6Y9w51\n"
    "PXDkqVPI6ZJzzxuO3LxwnB7YSxLN/LREFA3JwHj9Onaqwoxb0DUAB66jYq3qquNi\n"
    "7v5TEw4i0gL+xtk1KrusEkFS71H6d9ig5WFVyN0CgYAfAymnVbcd7ygiKMYkdshD\n"
    "hMksGN/euX7/UVl0O9Rla9SR4hMpEx98rnpn1FgYMn/JUC/pF/2bBbA0dpKGKV61\n"
    "X0280ApZJubeD0NWMwi+d5stQEmSNrmrAazVkiGuEJtmzPJLYp+CtVUKc/wP9mys\n"
    "aT0C2WgORb8KceWlWlH68g==\n"
    "-----END PRIVATE KEY-----\n";
inline constexpr char kEcPrivatePem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgyeK9iMfSJvc2l780\n"
    "sAlESXaGNh7l/58orQkS9TdPcCOhRANCAAQPaJeTmpTgIqWPjxBBCE5cRukbw8ZL\n"
    "APck5mvXhOro/RNEYhc4ckMojhWqeitAEaILSi/Ov58tcs23JV4cieM9\n"
    "-----END PRIVATE KEY-----\n";
