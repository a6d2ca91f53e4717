namespace OnnxAlign.Core;

/// <summary>
/// The library's exception family: an input it cannot use (a model, config, file or option value), named by the
/// library's own parameter so that each front end can say it in its own words (the CLI maps it to its flag).
/// Misuse of the API itself (a null, a negative count) is .NET's <see cref="ArgumentException"/> with its
/// <see cref="ArgumentException.ParamName"/>.
/// </summary>
public class OnnxAlignException : Exception
{
    /// <summary>Creates the exception; when <paramref name="parameter"/> is given, <paramref name="message"/> starts with it.</summary>
    public OnnxAlignException(string message, string? parameter = null, Exception? inner = null) : base(message, inner) => Parameter = parameter;

    /// <summary>
    /// The parameter or option at fault, as the library spells it (<c>reward</c>, <c>DenoiserOptions.Device</c>,
    /// <c>outputDirectory</c>); the message starts with it. Null when the message names a file instead.
    /// </summary>
    public string? Parameter { get; }

    /// <summary>How a message names another option (a remedy): <c>option 'Name'</c>, which a front end may respell.</summary>
    public static string Option(string name) => $"option '{name}'";
}

/// <summary>A model, config, input file or option value that the project cannot use; the message names it and what was expected.</summary>
public class ConfigException : OnnxAlignException
{
    /// <summary>Creates the exception with a one-line message naming the file and the problem.</summary>
    public ConfigException(string message) : base(message) { }

    /// <summary>Creates the exception wrapping the error that caused it.</summary>
    public ConfigException(string message, Exception inner) : base(message, null, inner) { }

    /// <summary>Creates the exception for a bad value of <paramref name="parameter"/>; <paramref name="message"/> starts with the parameter's name.</summary>
    public ConfigException(string message, string parameter, Exception? inner = null) : base(message, parameter, inner) { }

    /// <summary>The exception for a bad value of <paramref name="parameter"/>: "<paramref name="parameter"/> <paramref name="detail"/>".</summary>
    public static ConfigException For(string parameter, string detail, Exception? inner = null) =>
        new(detail.StartsWith(':') ? parameter + detail : $"{parameter} {detail}", parameter, inner);
}
